"""The serving model predicts its own answer length: query building, postfixes, parsing, the logprob distribution."""
