"""rnnserve: serve recurrent models (RNN, LSTM, GRU) through ONNX Runtime, keeping each
client's hidden state between calls. See README.md for usage and ../shared/DESIGN.md for the
architecture; the package layout mirrors it (engine/ is the core, http/ a protocol adapter)."""

__version__ = "0.1.0"
