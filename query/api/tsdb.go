package api

import (
	"net/http"
	"strconv"
)

// TSDBStatus is /api/v1/status/tsdb's data, in Prometheus's shape.
type TSDBStatus struct {
	HeadStats                   HeadStats   `json:"headStats"`
	SeriesCountByMetricName     []NameCount `json:"seriesCountByMetricName"`
	LabelValueCountByLabelName  []NameCount `json:"labelValueCountByLabelName"`
	MemoryInBytesByLabelName    []NameCount `json:"memoryInBytesByLabelName"`
	SeriesCountByLabelValuePair []NameCount `json:"seriesCountByLabelValuePair"`
}

type HeadStats struct {
	NumSeries  int   `json:"numSeries"`
	ChunkCount int   `json:"chunkCount"`
	MinTime    int64 `json:"minTime"`
	MaxTime    int64 `json:"maxTime"`
}

type NameCount struct {
	Name  string `json:"name"`
	Value int    `json:"value"`
}

func (a *API) tsdbStatus(r *http.Request) (any, error) {
	if a.TSDBStatus == nil {
		return nil, &apiError{typ: errInternal, err: errNoStats}
	}
	limit := 10
	if s := r.Form.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, badData("limit must be a positive number")
		}
		limit = n
	}
	return a.TSDBStatus(limit), nil
}
