"""Engine plumbing shared by workflows and activities: names, models, retries."""
