package report

import (
	"context"
	"math"
	"time"

	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
	"github.com/headroomdb/headroom/query"
)

// GRPC implements headroom.v1.Reports.
type GRPC struct {
	headroomv1.UnimplementedReportsServer
	src    query.Source
	engine *query.Engine
	// MetricUnit, if set, gives a metric's unit (from its metadata) for a
	// report that names none.
	MetricUnit func(metric string) string
}

// NewGRPC returns the Reports service; register it with
// headroomv1.RegisterReportsServer.
func NewGRPC(src query.Source, engine *query.Engine) *GRPC {
	if engine == nil {
		engine = &query.Engine{}
	}
	return &GRPC{src: src, engine: engine}
}

func (g *GRPC) Report(ctx context.Context, req *headroomv1.ReportRequest) (*headroomv1.ReportResponse, error) {
	o := Options{Query: req.GetQuery(), Start: time.UnixMilli(req.GetStartMs()).UTC(), End: time.UnixMilli(req.GetEndMs()).UTC(),
		Step: time.Duration(req.GetStepMs()) * time.Millisecond, Threshold: req.GetThreshold(), HasThreshold: req.GetHasThreshold(),
		Horizon: time.Duration(req.GetHorizonMs()) * time.Millisecond, PercentileOf: req.GetPercentileOf(), Unit: req.GetUnit(), MetricUnit: g.MetricUnit}
	r, err := Run(ctx, g.engine, g.src, o)
	if err != nil {
		return nil, query.GRPCError(BadRequest(err))
	}
	return ToProto(r), nil
}

// ToProto converts a report to its wire form (HTTP answers are its JSON).
func ToProto(r *Report) *headroomv1.ReportResponse {
	out := &headroomv1.ReportResponse{Query: r.Query, StartMs: r.Start.UnixMilli(), EndMs: r.End.UnixMilli(), StepMs: r.Step.Milliseconds(),
		HasThreshold: r.HasThreshold, Threshold: r.Threshold, HorizonMs: r.Horizon.Milliseconds(), Tiers: r.Tiers, PercentileOf: r.PercentileOf, Unit: r.Unit}
	for _, g := range r.Groups {
		pg := &headroomv1.ReportGroup{Points: int64(g.Points), Mean: g.Mean, P50: g.P50, P95: g.P95, P99: g.P99, Max: g.Max,
			PeakToAverage: g.PeakToAverage, BusiestHour: int32(g.BusiestHour), BusiestWeekday: int32(g.BusiestWeekday), Days: int32(g.Days),
			TrendPerDay: g.TrendPerDay, TrendR2: g.TrendR2, Headroom: g.Headroom, HeadroomPct: g.HeadroomPct,
			CrossingInHorizon: g.CrossingInHorizon, AlreadyAboveThreshold: g.AlreadyAboveThreshold, DaysUntilCrossing: g.DaysUntilCrossing,
			FirstDayMs: g.FirstDay.UnixMilli(), DailyP95: g.DailyP95, TrendIntercept: g.TrendIntercept,
			Forecast: g.Forecast, ForecastWhy: g.ForecastWhy, CurrentLevel: g.CurrentLevel, RegimeStartMs: g.RegimeStart.UnixMilli(), Seasonal: g.Seasonal}
		if g.CrossingInHorizon {
			pg.CrossingMs = g.Crossing.UnixMilli()
		}
		if !g.CrossingLo.IsZero() {
			pg.CrossingLoMs = g.CrossingLo.UnixMilli()
		}
		if !g.CrossingHi.IsZero() {
			pg.CrossingHiMs = g.CrossingHi.UnixMilli()
		}
		if math.IsInf(g.DaysUntilCrossing, 1) {
			pg.DaysUntilCrossing = math.Inf(1)
		}
		for _, l := range g.Labels {
			pg.Labels = append(pg.Labels, &headroomv1.Label{Name: l.Name, Value: l.Value})
		}
		out.Groups = append(out.Groups, pg)
	}
	return out
}
