// HTTP module: see ARCHITECTURE.md.
