package ingest

// MetricNameForTest exposes the OTLP metric-name mapping to the external
// tests.
var MetricNameForTest = metricName
