"""The Gradio app: background startup, the API endpoints and the page. Imports gradio: the library
itself (:class:`recommender.Recommender`) never needs this package."""
