// GGUF module: see ARCHITECTURE.md.
