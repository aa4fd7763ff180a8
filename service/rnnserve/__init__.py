"""rnnserve: serve recurrent models (RNN, LSTM, GRU) through ONNX Runtime, keeping each
client's hidden state between calls. See README.md for usage and docs/architecture.md for the
architecture; the package layout mirrors it (engine/ is the core, http/ and grpc/ transports,
state/ the session stores)."""

__version__ = "0.1.0"
