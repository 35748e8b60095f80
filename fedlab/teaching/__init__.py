"""Teaching: the Lessons page's lessons and notes, their preparation, and the demo runs."""
