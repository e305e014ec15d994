"""The protocol core: the JSON stream decoder and the agent channel."""
