// Command headroom is the Headroom time-series database binary: the server
// (`serve`), its clients (`write`), and `demo`, which exercises the storage
// engine on a data directory without a server. It wires the engine into
// ingest; it must hold no logic those packages should own.
package main

import (
	"flag"
	"fmt"
	"os"
)

const usage = `headroom: a time-series database for operations metrics

Usage:
  headroom serve [flags]   serve a data directory: gRPC and OTLP on :4317,
                           remote-write and /metrics on :9090
  headroom write [flags] [FILE...]
                           push samples from CSV or Prometheus text files
                           (or stdin) to a server, for backfilling
  headroom query [flags] 'PROMQL'
                           evaluate PromQL on a server: a table, CSV or JSON
  headroom report --query 'PROMQL' [--range 90d] [--threshold 0.8]
                           capacity report: distribution, busiest hour and
                           day, growth trend, headroom, forecast crossing
  headroom check --data-dir DIR
                           scan a stopped server's data directory for
                           damage (corrupt chunks or blocks, orphaned
                           index entries); exits 1 if any
  headroom demo [flags]    write a day of synthetic host metrics into a data
                           directory, read them back and report what it took
  headroom version         print the version

Run 'headroom COMMAND -h' for a command's flags.
`

var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = runServe(os.Args[2:])
	case "write":
		err = runWrite(os.Args[2:])
	case "query":
		err = runQuery(os.Args[2:], os.Stdout)
	case "report":
		err = runReport(os.Args[2:], os.Stdout)
	case "check":
		err = runCheck(os.Args[2:], os.Stdout)
	case "demo":
		err = runDemo(os.Args[2:])
	case "version", "--version":
		fmt.Println("headroom", version)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "headroom: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "headroom:", err)
		os.Exit(1)
	}
}
