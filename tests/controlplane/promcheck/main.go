// promcheck validates what the Helm chart hands to Prometheus, with
// Prometheus' own code (pinned in build.sh):
//
//	promcheck rules FILE...   rule files, as `promtool check rules` does:
//	                          YAML shape, the PromQL of every expr, the Go
//	                          templates of labels and annotations
//	promcheck exprs           PromQL expressions, one per line on stdin
package main

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "rules" && os.Args[1] != "exprs") {
		fmt.Fprintln(os.Stderr, "usage: promcheck rules FILE... | promcheck exprs < lines")
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	failed := false
	if os.Args[1] == "rules" {
		logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
		for _, f := range os.Args[2:] {
			groups, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, p, logger)
			for _, e := range errs {
				fmt.Fprintln(os.Stderr, e)
				failed = true
			}
			if groups != nil {
				n := 0
				for _, g := range groups.Groups {
					n += len(g.Rules)
				}
				fmt.Printf("%s: %d rules\n", f, n)
			}
		}
	} else {
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		n := 0
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				continue
			}
			n++
			if _, err := p.ParseExpr(line); err != nil {
				fmt.Fprintf(os.Stderr, "expression %d %q: %v\n", n, line, err)
				failed = true
			}
		}
		fmt.Printf("%d expressions\n", n)
	}
	if failed {
		os.Exit(1)
	}
}
