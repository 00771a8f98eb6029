"""The tools around the pipeline: the CLI, `journey run`, the console, topics, the simulator,
imports, publishing, tailing and dead-letter tools."""
