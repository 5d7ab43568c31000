"""The `x-lengthwise-*` response headers: what the gateway decided for a request, read back by the benchmark."""

REQUEST_ID = "x-lengthwise-request-id"
#: Index of the backend the request went to.
BACKEND = "x-lengthwise-backend"
PREDICTED_TOKENS = "x-lengthwise-predicted-tokens"
#: Which predictor the request was scheduled by (`auto:none`: by arrival).
PREDICTOR = "x-lengthwise-predictor"
PREDICTION_MS = "x-lengthwise-prediction-ms"
QUEUE_MS = "x-lengthwise-queue-ms"
PRIORITY = "x-lengthwise-priority"
