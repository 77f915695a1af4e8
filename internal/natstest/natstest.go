// Package natstest runs a real NATS JetStream cluster inside a test or
// benchmark process, on loopback ports with a store directory per
// server, for the cluster mode's tests and figures. It must not be
// imported by the server.
package natstest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// freePort returns a loopback port nothing listens on (a moment ago).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Cluster is n NATS servers with JetStream, clustered over loopback,
// each with its own store directory, in this process.
type Cluster struct {
	Servers []*server.Server
	opts    []*server.Options
}

// Start starts n clustered servers and waits until they take clients;
// they stop when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	c, err := StartIn(dirs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// StartIn starts a server for each store directory (for benchmarks,
// which have no testing.TB); Stop stops them.
func StartIn(dirs []string) (*Cluster, error) {
	n := len(dirs)
	routes := make([]int, n)
	for i := range routes {
		var err error
		if routes[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	var urls []string
	for _, p := range routes {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	c := &Cluster{}
	for i := 0; i < n; i++ {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   dirs[i],
			Cluster: server.ClusterOpts{
				Name: "headroom-test",
				Host: "127.0.0.1",
				Port: routes[i],
			},
			Routes: server.RoutesFromStr(strings.Join(urls, ",")),
			NoLog:  true,
			NoSigs: true,
		}
		s, err := server.NewServer(o)
		if err != nil {
			c.Stop()
			return nil, err
		}
		go s.Start()
		c.Servers = append(c.Servers, s)
		c.opts = append(c.opts, o)
	}
	for i, s := range c.Servers {
		if !s.ReadyForConnections(30 * time.Second) {
			c.Stop()
			return nil, fmt.Errorf("NATS server %s not ready", s.Name())
		}
		// A restart keeps the client port, which clients know.
		c.opts[i].Port = s.Addr().(*net.TCPAddr).Port
	}
	return c, nil
}

// Stop shuts every server down.
func (c *Cluster) Stop() {
	for _, s := range c.Servers {
		s.Shutdown()
	}
}

// Restart starts server i again, after Shutdown, on its ports and its
// store directory.
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	s, err := server.NewServer(c.opts[i])
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatalf("NATS server %s not ready after a restart", s.Name())
	}
	c.Servers[i] = s
}

// URLs are the client URLs of the servers running, comma-separated.
func (c *Cluster) URLs() string {
	var u []string
	for _, s := range c.Servers {
		if s.Running() {
			u = append(u, s.ClientURL())
		}
	}
	return strings.Join(u, ",")
}
