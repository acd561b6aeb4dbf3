"""/imagine, its result buttons, and the Edit modal (the extension is bot.imagine.cog)."""
