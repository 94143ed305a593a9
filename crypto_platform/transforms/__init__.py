"""Pure polars transforms (polars in, polars out, no Dagster): trades -> bronze -> candles -> features."""
