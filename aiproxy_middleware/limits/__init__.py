"""Token rate limits and quotas (issue 14), counted in a `state.store.SharedStore`."""
