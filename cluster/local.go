package cluster

import (
	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
)

// Store is a node's storage.DB as the cluster's Local.
func Store(db *storage.DB) Local { return store{db} }

type store struct{ db *storage.DB }

func (s store) NewAppender() LocalAppender      { return s.db.Appender() }
func (s store) Mark(name string) (uint64, bool) { return s.db.Mark(name) }
func (s store) Querier(mint, maxt int64) (query.Querier, error) {
	q, err := s.db.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return q, nil
}
