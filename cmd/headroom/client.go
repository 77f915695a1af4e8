package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/headroomdb/headroom/auth"
)

// clientFlags are the connection flags every client subcommand shares.
type clientFlags struct {
	server     string
	token      string
	tokenFile  string
	tls        bool
	caFile     string
	serverName string
	skipVerify bool
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", "127.0.0.1:4317", "gRPC address of the server (host:port)")
	fs.StringVar(&c.token, "token", os.Getenv("HEADROOM_TOKEN"), "bearer token, when the server has --tokens-file (default $HEADROOM_TOKEN)")
	fs.StringVar(&c.tokenFile, "token-file", "", "read the bearer token from this file instead (keeps it out of the process list)")
	fs.BoolVar(&c.tls, "tls", false, "connect with TLS (implied by --tls-ca and --tls-server-name)")
	fs.StringVar(&c.caFile, "tls-ca", "", "PEM CA certificate(s) to verify the server with (default: the system's)")
	fs.StringVar(&c.serverName, "tls-server-name", "", "name to verify the server's certificate against (default: the host of --server)")
	fs.BoolVar(&c.skipVerify, "tls-insecure-skip-verify", false, "do not verify the server's certificate (testing only)")
}

func (c *clientFlags) dial() (*grpc.ClientConn, error) {
	token := c.token
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token = string(trimSpace(b))
	}
	useTLS := c.tls || c.caFile != "" || c.serverName != "" || c.skipVerify
	var opts []grpc.DialOption
	if useTLS {
		conf := &tls.Config{ServerName: c.serverName, InsecureSkipVerify: c.skipVerify, MinVersion: tls.VersionTLS12}
		if c.caFile != "" {
			pem, err := os.ReadFile(c.caFile)
			if err != nil {
				return nil, fmt.Errorf("--tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, errors.New("--tls-ca: no PEM certificate in the file")
			}
			conf.RootCAs = pool
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if token != "" {
		// Without TLS the token crosses the network in clear: allowed,
		// because the default server listens on loopback only.
		opts = append(opts, grpc.WithPerRPCCredentials(auth.Credentials{Token: token, Insecure: !useTLS}))
	}
	opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	return grpc.NewClient(c.server, opts...)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
