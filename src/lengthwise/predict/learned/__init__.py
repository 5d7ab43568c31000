"""The learned predictor: prompt features (MiniLM embedding, TF-IDF, length), ridge in log space, online refits."""
