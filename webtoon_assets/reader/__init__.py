"""A local HTML reader: scroll an episode as a reader would, and an index for the season."""
