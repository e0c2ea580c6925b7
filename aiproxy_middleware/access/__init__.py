"""Who is calling: consumers, their credentials, and who may use which route (issue 14)."""
