package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/headroomdb/headroom/auth"
	"github.com/headroomdb/headroom/cluster"
	"github.com/headroomdb/headroom/query"
	"github.com/headroomdb/headroom/storage"
	"github.com/headroomdb/headroom/storage/rollup"
	"github.com/headroomdb/headroom/storage/series"
)

// clusterFlags are serve's --cluster-* flags (docs/cluster.md).
type clusterFlags struct {
	urls       string
	node       string
	advertise  string
	partitions int
	replicas   int
	lease      time.Duration
	retention  time.Duration
	token      string
	partial    bool
	seriesMem  int
}

func (c *clusterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.urls, "cluster", "", "join a Headroom cluster whose shared state lives in NATS JetStream: the NATS servers' URLs, comma-separated (nats://a:4222,nats://b:4222,nats://c:4222); empty: a single node (docs/cluster.md)")
	fs.StringVar(&c.node, "cluster-node", "", "this node's name in the cluster, unique and kept across restarts (its partitions' leases are in its name) (default <hostname>-<grpc port>)")
	fs.StringVar(&c.advertise, "cluster-advertise", "", "host:port where the other nodes reach this node's gRPC port (default the --listen address, or the hostname when it listens on all interfaces, and the gRPC port)")
	fs.IntVar(&c.partitions, "cluster-partitions", 64, "partitions of the series (a hash of their labels), fixed for the cluster's life: every node must say the same")
	fs.IntVar(&c.replicas, "cluster-replicas", 3, "replicas of the write stream and the owners bucket in JetStream (at most the number of NATS servers)")
	fs.DurationVar(&c.lease, "cluster-lease", 15*time.Second, "how long a node keeps its partitions without renewing them: the time before the others take over the partitions of a node that is gone")
	fs.DurationVar(&c.retention, "cluster-stream-retention", 72*time.Hour, "how long the write stream keeps a message: the longest a node may be away and still catch up from the stream")
	fs.BoolVar(&c.partial, "cluster-partial-reads", true, "when no owner of a partition answers, answer with the other partitions and a warning naming the missing ones; false: fail the query")
	fs.IntVar(&c.seriesMem, "cluster-series-cache", 1<<20, "how many series this node remembers having written within their owners' active-series limits (about 55 bytes each); a write's series it does not remember are checked with their owners before the write is acknowledged")
	fs.StringVar(&c.token, "cluster-token", os.Getenv("HEADROOM_CLUSTER_TOKEN"), "the read token this node sends when it asks its peers for series, when they have --tokens-file (default $HEADROOM_CLUSTER_TOKEN)")
}

// joinCluster joins the cluster of cfg.cluster with db as this node's
// store; grpcAddr is the bound gRPC port.
func joinCluster(cfg *serveConfig, db *storage.DB, grpcAddr net.Addr, useTLS bool, log *slog.Logger) (*cluster.Node, error) {
	c := cfg.cluster
	port := strconv.Itoa(grpcAddr.(*net.TCPAddr).Port)
	host, _ := os.Hostname()
	name := c.node
	if name == "" {
		name = strings.NewReplacer(".", "-", " ", "-").Replace(host) + "-" + port
	}
	adv := c.advertise
	if adv == "" {
		h := cfg.listen
		if h == "" || h == "0.0.0.0" || h == "::" {
			h = host
		}
		adv = net.JoinHostPort(h, port)
	}
	dial := func(addr string) (*grpc.ClientConn, error) {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if useTLS {
			opts[0] = grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}))
		}
		if c.token != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(auth.Credentials{Token: c.token, Insecure: !useTLS}))
		}
		return grpc.NewClient(addr, opts...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	n, err := cluster.Join(ctx, cluster.Config{URLs: c.urls, Node: name, Advertise: adv, Partitions: c.partitions,
		Replicas: c.replicas, Lease: c.lease, Retention: c.retention, PartialReads: c.partial, SeriesCache: c.seriesMem, Logger: log}, clusterStore{querySource{db}}, dial)
	if err != nil {
		return nil, fmt.Errorf("--cluster: %w", err)
	}
	log.Info("joined the cluster", "node", name, "advertise", adv, "partitions", c.partitions, "took", time.Since(start).Round(time.Millisecond))
	return n, nil
}

// clusterStore is the data directory as the cluster's Local: the cluster
// package must not depend on the storage engine. Its tiers, raw floor
// and histograms are the query source's.
type clusterStore struct{ querySource }

func (s clusterStore) NewAppender(pastLimits bool) cluster.LocalAppender {
	if pastLimits {
		return s.db.Appender().SkipSeriesLimits()
	}
	return s.db.Appender()
}
func (s clusterStore) CheckNewSeries(lss []series.Labels, prior int) ([]int, int, error) {
	return s.db.CheckNewSeries(lss, prior)
}

// The copy of a partition's tiers: without it a node that copies a
// partition would lack its history older than the raw retention.
var _ cluster.TierImporter = clusterStore{}

// And its blocks sent as they are, not decoded and encoded again.
var _ cluster.StoredRollupSource = clusterStore{}

func (s clusterStore) ImportRollups(tier int, ss []rollup.SeriesBuckets, before int64) error {
	return s.db.ImportRollups(tier, ss, before)
}
func (s clusterStore) ImportHistRollups(tier int, ss []rollup.SeriesHistBuckets, before int64) error {
	return s.db.ImportHistRollups(tier, ss, before)
}
func (s clusterStore) ImportStoredRollups(tier int, ss []rollup.StoredSeries, before int64) error {
	return s.db.ImportStoredRollups(tier, ss, before)
}
func (s clusterStore) EachStoredRollup(tier int, mint, maxt int64, sketches, toFloor bool, shard, shards int, ms []*series.Matcher, f func(series.Labels, int64, []rollup.StoredBlock) error) (query.TierRead, error) {
	rr, err := s.db.EachStoredRollup(tier, mint, maxt, sketches, toFloor, shard, shards, ms, f)
	return query.TierRead{RawDays: rr.RawDays}, err
}
func (s clusterStore) SeriesRawFloor(ls series.Labels) (int64, error) { return s.db.SeriesRawFloor(ls) }
func (s clusterStore) LatestRawFloor() int64                          { return s.db.LatestRawFloor() }
func (s clusterStore) Mark(name string) (uint64, bool)                { return s.db.Mark(name) }
func (s clusterStore) SetMetadata(metric string, md series.Metadata) error {
	return s.db.SetMetadata(metric, md)
}
