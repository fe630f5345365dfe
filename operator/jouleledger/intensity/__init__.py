"""Grid carbon-intensity providers: a static table by zone, and HTTP APIs (Electricity Maps, WattTime)."""
