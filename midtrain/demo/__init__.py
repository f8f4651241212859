"""The demo: a trunk and three midtraining branches on text every Python installation carries, end to end."""
