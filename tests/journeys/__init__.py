"""Black-box journeys (issue 11): real relay and daemon processes driven through the CLI."""
