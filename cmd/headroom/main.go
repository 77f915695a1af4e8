// Command headroom is the Headroom time-series database binary. Until the
// server lands, it offers `demo`, which exercises the storage engine end to
// end on a real data directory, and `version`.
package main

import (
	"flag"
	"fmt"
	"os"
)

const usage = `headroom: a time-series database for operations metrics

Usage:
  headroom demo [flags]    write a day of synthetic host metrics into a data
                           directory, read them back and report what it took
  headroom version         print the version

Run 'headroom demo -h' for the demo's flags.
`

var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
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
