"""HTTP protocol adapter: FastAPI routes that parse, call the engine and encode. No model
logic lives here."""
