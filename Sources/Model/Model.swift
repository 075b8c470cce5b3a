// Model module: see ARCHITECTURE.md.
