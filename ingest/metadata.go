package ingest

import (
	"fmt"
	"log/slog"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/headroomdb/headroom/storage/series"
)

// MetadataSetter keeps metric metadata (type, unit, help) that agents
// send beside their samples; the storage implements it.
type MetadataSetter interface {
	SetMetadata(metric string, md series.Metadata) error
}

type wireMetadata struct {
	metric string
	md     series.Metadata
}

// metricTypes are remote-write's MetricMetadata.MetricType values by
// number, as Prometheus's API names them.
var metricTypes = []string{"unknown", "counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset"}

// parseMetadata reads a remote-write MetricMetadata message (type 1,
// metric_family_name 2, help 4, unit 5): what Prometheus sends in field
// 3 of a WriteRequest.
func parseMetadata(b []byte) (wireMetadata, error) {
	var m wireMetadata
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return m, fmt.Errorf("metadata: malformed field tag")
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return m, fmt.Errorf("metadata: malformed type")
			}
			b = b[n:]
			if v >= uint64(len(metricTypes)) {
				return m, fmt.Errorf("metadata: unknown metric type %d", v)
			}
			m.md.Type = metricTypes[v]
		case (num == 2 || num == 4 || num == 5) && typ == protowire.BytesType:
			s, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return m, fmt.Errorf("metadata: truncated field %d", num)
			}
			b = b[n:]
			switch num {
			case 2:
				m.metric = string(s)
			case 4:
				m.md.Help = string(s)
			case 5:
				m.md.Unit = string(s)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return m, fmt.Errorf("metadata: malformed field %d", num)
			}
			b = b[n:]
		}
	}
	if m.metric == "" {
		return m, fmt.Errorf("metadata: no metric_family_name")
	}
	if !utf8.ValidString(m.metric) || !utf8.ValidString(m.md.Help) || !utf8.ValidString(m.md.Unit) {
		return m, fmt.Errorf("metadata of %q: not UTF-8", m.metric)
	}
	return m, nil
}

// ExemplarAdder keeps the exemplars agents send; the exemplar store
// implements it.
type ExemplarAdder interface {
	AddExemplar(ls series.Labels, e series.Exemplar) error
}

// keepExemplars hands a request's exemplars to the store once its
// samples are stored, with their series' labels (sorted); it returns how
// many were taken. One refused (labels too long) is skipped.
func keepExemplars(db Appendable, labelsOf func(i int) series.Labels, es []flatExemplar, exLabels []series.Label) int {
	ea, ok := db.(ExemplarAdder)
	if !ok || len(es) == 0 {
		return 0
	}
	n := 0
	last, ls := -1, series.Labels(nil)
	for _, e := range es {
		if e.series != last {
			last, ls = e.series, labelsOf(e.series).Copy()
			ls.Sort()
		}
		el := series.Labels(exLabels[e.l0:e.l1]).Copy()
		el.Sort()
		if ea.AddExemplar(ls, series.Exemplar{Labels: el, Value: e.v, T: e.t}) == nil {
			n++
		}
	}
	return n
}

// keepMetadata hands a request's metadata to the storage, after its
// samples were stored: an entry refused there (too long) is logged, as
// the samples are in.
func keepMetadata(db Appendable, ms []wireMetadata) {
	ks, ok := db.(MetadataSetter)
	if !ok {
		return
	}
	for _, m := range ms {
		if err := ks.SetMetadata(m.metric, m.md); err != nil {
			slog.Warn("metric metadata not kept", "metric", m.metric, "err", err)
		}
	}
}
