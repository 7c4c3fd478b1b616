"""Putting finished panels together into reader-facing images."""
