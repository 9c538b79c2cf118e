"""Quality evaluation of a bundle."""
