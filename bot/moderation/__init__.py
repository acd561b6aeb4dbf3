"""Server moderation: per-server policy (limits, channels, roles, blocks, banned words, NSFW), the door
every job goes through (gate), and the /imagine-admin commands (admin, loaded as an extension)."""
