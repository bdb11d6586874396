"""ComfyUI adapters for the engine: V3 node schemas and type conversion, no math."""
