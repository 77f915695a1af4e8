package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/headroomdb/headroom/cluster"
	"github.com/headroomdb/headroom/internal/browser"
	"github.com/headroomdb/headroom/internal/natstest"
	headroomv1 "github.com/headroomdb/headroom/proto/headroom/v1"
)

const testPartitions = 8

// clusterNode is one `headroom serve --cluster` process of a test.
type clusterNode struct {
	name, dir string
	c         *child
}

func startClusterNode(t *testing.T, nats *natstest.Cluster, name, dir string) *clusterNode {
	t.Helper()
	c := startChild(t, dir, "--cluster", nats.URLs(), "--cluster-node", name, "--cluster-partitions", fmt.Sprint(testPartitions),
		"--cluster-lease", "3s", "--checkpoint-interval", "2s")
	if c.addr == "" {
		t.Fatalf("node %s exited: %v\n%s", name, <-c.exited, c.log())
	}
	t.Cleanup(func() { c.cmd.Process.Kill() })
	return &clusterNode{name: name, dir: dir, c: c}
}

// status reads the node's /api/v1/status/cluster.
func (n *clusterNode) status(t *testing.T) cluster.Status {
	t.Helper()
	code, body := httpGet(t, n.c.httpURL+"/api/v1/status/cluster")
	var resp struct {
		Data cluster.Status `json:"data"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &resp) != nil {
		t.Fatalf("%s: status/cluster: %d %s", n.name, code, body)
	}
	return resp.Data
}

// serving counts, for each partition, the nodes that serve it.
func serving(t *testing.T, nodes []*clusterNode) []int {
	out := make([]int, testPartitions)
	for _, n := range nodes {
		for _, p := range n.status(t).Partition {
			if p.Serving != nil && *p.Serving {
				out[p.Partition]++
			}
		}
	}
	return out
}

// waitServing waits until every partition is served by two of nodes.
func waitServing(t *testing.T, nodes []*clusterNode, timeout time.Duration) {
	t.Helper()
	var got []int
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		got = serving(t, nodes)
		ok := true
		for _, k := range got {
			ok = ok && k == 2
		}
		if ok {
			return
		}
	}
	t.Fatalf("partitions served by %v nodes after %v, want 2 each", got, timeout)
}

// countQuery asks node for the number of samples of w it can read.
func (n *clusterNode) count(t *testing.T, at int64) (int64, int, string) {
	t.Helper()
	q := url.QueryEscape(`sum(count_over_time(w[1h]))`)
	code, body := httpGet(t, fmt.Sprintf("%s/api/v1/query?query=%s&time=%.3f", n.c.httpURL, q, float64(at)/1000))
	if code != 200 {
		return 0, code, body
	}
	return int64(scalarOf(t, body)), code, body
}

// readsAll waits until every node reads at least the acknowledged
// samples (owners apply them after the acknowledgement), and fails the
// test if one reads fewer, or more than were sent: writes refused when
// a node died may still have been stored (published, not acknowledged).
func readsAll(t *testing.T, what string, nodes []*clusterNode, at, acked, sent int64) {
	t.Helper()
	for _, n := range nodes {
		var got int64
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			var code int
			var body string
			if got, code, body = n.count(t, at); code != 200 {
				t.Fatalf("%s: query on %s: %d %s", what, n.name, code, body)
			}
			if got >= acked {
				break
			}
		}
		if got < acked || got > sent {
			for _, m := range nodes {
				t.Logf("log of %s:\n%s", m.name, m.c.log())
			}
			t.Fatalf("%s: %s reads %d samples, %d acknowledged, %d sent", what, n.name, got, acked, sent)
		}
	}
}

// startTestCluster starts three NATS servers and three nodes on them,
// and waits until every partition has two owners serving it.
func startTestCluster(t *testing.T) (*natstest.Cluster, []*clusterNode) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts server processes; skipped with -short")
	}
	nats := natstest.Start(t, 3)
	var nodes []*clusterNode
	for i := 0; i < 3; i++ {
		nodes = append(nodes, startClusterNode(t, nats, fmt.Sprintf("h%d", i), filepath.Join(t.TempDir(), "data")))
	}
	waitServing(t, nodes, time.Minute)
	return nats, nodes
}

// clusterWriters write series w over gRPC to the given nodes until stop,
// each sample with its own timestamp, and count what was acknowledged.
type clusterWriters struct {
	acked atomic.Int64
	next  atomic.Int64 // timestamps handed out
	wg    sync.WaitGroup
}

func (w *clusterWriters) start(t *testing.T, addrs []string, stop chan struct{}) {
	for k, addr := range addrs {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				panic(err)
			}
			defer conn.Close()
			ic := headroomv1.NewIngestClient(conn)
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				req := &headroomv1.WriteRequest{}
				ts := w.next.Add(1)
				for s := 0; s < 20; s++ {
					req.Series = append(req.Series, &headroomv1.Series{
						Labels:  []*headroomv1.Label{{Name: "__name__", Value: "w"}, {Name: "writer", Value: fmt.Sprint(k)}, {Name: "s", Value: fmt.Sprint(s)}},
						Samples: []*headroomv1.Sample{{TimestampMs: ts, Value: float64(ts)}}})
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := ic.Write(ctx, req)
				cancel()
				if err == nil {
					w.acked.Add(20)
				}
			}
		}()
	}
}

// TestServeCluster: three Headroom processes on a three-server JetStream
// cluster. Writes to any node are readable from every node; a node killed
// with kill -9 during writes leaves the queries answering from the other
// owners, and once restarted it catches up and serves; a NATS server
// killed and restarted stops no write; a node stopped for good has its
// partitions taken over within the lease; and nothing acknowledged is
// missing anywhere, nor counted twice.
func TestServeCluster(t *testing.T) {
	nats, nodes := startTestCluster(t)

	// The console's status view shows the cluster: every partition with
	// its two owners.
	ctx := browser.New(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(nodes[0].c.httpURL+"/#/status")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the cluster's partitions on the status view", fmt.Sprintf(
		`(() => { const rows = document.querySelectorAll("#cluster-partitions tbody tr"); return rows.length === %d && [...rows].every(r => r.children[1].textContent.split(", ").length === 2); })()`, testPartitions))
	shoot(t, ctx, "status-cluster")

	// Timestamps an hour back, one millisecond apart: every sample is
	// new, whatever node applies it.
	base := time.Now().Add(-30 * time.Minute).UnixMilli()
	w := &clusterWriters{}
	w.next.Store(base)
	stop := make(chan struct{})
	w.start(t, []string{nodes[0].c.addr, nodes[1].c.addr, nodes[2].c.addr}, stop)
	time.Sleep(time.Second)
	at := base + time.Hour.Milliseconds()/2

	// kill -9 a node during the writes (its writer's requests fail).
	h1 := nodes[1]
	h1.c.cmd.Process.Signal(syscall.SIGKILL)
	<-h1.c.exited
	for i := 0; i < 5; i++ {
		for _, n := range []*clusterNode{nodes[0], nodes[2]} {
			if _, code, body := n.count(t, at); code != 200 {
				t.Fatalf("query on %s with h1 killed: %d %s", n.name, code, body)
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	// It restarts on its directory, catches up and serves.
	nodes[1] = startClusterNode(t, nats, "h1", h1.dir)
	waitServing(t, nodes, time.Minute)

	// A NATS server down and back: writes go on.
	before := w.acked.Load()
	nats.Servers[2].Shutdown()
	time.Sleep(2 * time.Second)
	nats.Restart(t, 2)
	time.Sleep(time.Second)
	close(stop)
	w.wg.Wait()
	if w.acked.Load() <= before {
		t.Errorf("no write acknowledged while a NATS server was down and back (%d before, %d after)", before, w.acked.Load())
	}
	acked := w.acked.Load()
	t.Logf("%d samples acknowledged", acked)

	// Every node reads every acknowledged sample, once.
	sent := (w.next.Load() - base) * 20
	readsAll(t, "after the kill and the NATS restart", nodes, at, acked, sent)

	// h2 stops for good: its partitions move to h0 and h1 within the
	// lease, and they still read everything.
	h2 := nodes[2]
	h2.c.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-h2.c.exited; err != nil {
		t.Errorf("h2 stopped with %v\n%s", err, h2.c.log())
	}
	start := time.Now()
	waitServing(t, nodes[:2], time.Minute)
	t.Logf("h2's partitions taken over in %v (lease 3 s)", time.Since(start).Round(100*time.Millisecond))
	readsAll(t, "after h2 left", nodes[:2], at, acked, sent)
}

// TestServeClusterCrashLoop is the single node's crash loop run against
// the cluster: each cycle writes to every node, kills one of them with
// kill -9 in the middle of the writes, starts it again on its directory,
// and checks that every node reads every acknowledged sample.
func TestServeClusterCrashLoop(t *testing.T) {
	nats, nodes := startTestCluster(t)
	base := time.Now().Add(-30 * time.Minute).UnixMilli()
	at := base + time.Hour.Milliseconds()/2
	w := &clusterWriters{}
	w.next.Store(base)
	const cycles = 3
	for cycle := 0; cycle < cycles; cycle++ {
		stop := make(chan struct{})
		w.start(t, []string{nodes[0].c.addr, nodes[1].c.addr, nodes[2].c.addr}, stop)
		time.Sleep(time.Second)
		victim := nodes[cycle%3]
		victim.c.cmd.Process.Signal(syscall.SIGKILL)
		<-victim.c.exited
		time.Sleep(500 * time.Millisecond)
		close(stop)
		w.wg.Wait()
		nodes[cycle%3] = startClusterNode(t, nats, victim.name, victim.dir)
		waitServing(t, nodes, time.Minute)
		acked, sent := w.acked.Load(), (w.next.Load()-base)*20
		readsAll(t, fmt.Sprintf("cycle %d", cycle), nodes, at, acked, sent)
		t.Logf("cycle %d: %s killed; %d samples acknowledged, all read from every node", cycle, victim.name, acked)
	}
}
