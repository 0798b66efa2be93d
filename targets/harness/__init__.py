"""Shared target plumbing: functions targets call, not a framework they inherit."""
