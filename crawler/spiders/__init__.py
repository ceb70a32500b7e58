"""capcrawl's spiders: ``images`` (crawl seed pages) and ``image_list`` (URL lists)."""
