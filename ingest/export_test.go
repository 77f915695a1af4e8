package ingest

// MetricNameForTest exposes the OTLP metric-name mapping to the external
// tests.
var MetricNameForTest = metricName

// RefCacheHits counts the series a gRPC Ingest service found by their
// label bytes.
func RefCacheHits(g *GRPC) int64 { return g.db.cache.hitCount() }
