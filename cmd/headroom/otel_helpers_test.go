package main

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

func metricNoUnit() metric.Int64CounterOption { return metric.WithDescription("orders placed") }
func withAttr(k, v string) metric.AddOption {
	return metric.WithAttributes(attribute.String(k, v))
}
func unitSeconds() metric.Float64HistogramOption { return metric.WithUnit("s") }
func bucketBounds(b ...float64) metric.Float64HistogramOption {
	return metric.WithExplicitBucketBoundaries(b...)
}
