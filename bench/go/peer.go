// The pattern bulwark's design starts from, as a peer in `make bench`: a fixed
// pool of goroutines reading a buffered channel, each job run in a function
// whose deferred recover() catches the panic and, depending on -stack, keeps
// nothing, the raw return addresses (runtime.Callers, like bulwark's capture,
// which also symbolizes later), or a printed trace (debug.Stack()).
//
//	go_peer -stack none|callers|debug -depth 10 -workers 2 -jobs 40000
//
// Prints one JSON object: {"jobs_per_s": ..., "failed": ...}. Every job
// panics `depth` calls deep. The producer is one more goroutine and
// GOMAXPROCS is workers + 1, as bulwark_bench gives every system `workers`
// threads running jobs and one producer; the clock stops when the last job
// has finished. Standard library only.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

var errBench = errors.New("bench failure")

//go:noinline
func panicAt(depth int) int {
	if depth <= 1 {
		panic(errBench)
	}
	return panicAt(depth-1) + 1
}

type pool struct {
	stack  string
	depth  int
	failed atomic.Int64
	kept   atomic.Int64 // bytes or frames kept, so the capture is not optimized away
}

// run is one job: the deferred recover is the whole guard.
func (p *pool) run() {
	defer func() {
		if r := recover(); r != nil {
			switch p.stack {
			case "callers":
				var pcs [64]uintptr
				p.kept.Add(int64(runtime.Callers(2, pcs[:])))
			case "debug":
				p.kept.Add(int64(len(debug.Stack())))
			}
			p.failed.Add(1)
		}
	}()
	panicAt(p.depth)
}

// jobsPerSecond runs n jobs through `workers` goroutines.
func (p *pool) jobsPerSecond(n, workers int) float64 {
	jobs := make(chan struct{}, 1024)
	var wg sync.WaitGroup
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go func() {
			defer wg.Done()
			for range jobs {
				p.run()
			}
		}()
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

func main() {
	stack := flag.String("stack", "none", "what the recover keeps: none, callers or debug")
	depth := flag.Int("depth", 10, "calls between the job and its panic (>= 1)")
	workers := flag.Int("workers", 2, "goroutines running jobs (>= 1)")
	jobs := flag.Int("jobs", 40000, "jobs in the timed run (>= 1)")
	flag.Parse()
	if *stack != "none" && *stack != "callers" && *stack != "debug" {
		fmt.Fprintln(os.Stderr, "go_peer: -stack must be none, callers or debug")
		os.Exit(2)
	}
	if *depth < 1 || *workers < 1 || *jobs < 1 {
		fmt.Fprintln(os.Stderr, "go_peer: -depth, -workers and -jobs must be at least 1")
		os.Exit(2)
	}
	runtime.GOMAXPROCS(*workers + 1)
	p := &pool{stack: *stack, depth: *depth}
	p.jobsPerSecond(*jobs/10+1, *workers) // warm-up, untimed
	p.failed.Store(0)
	rate := p.jobsPerSecond(*jobs, *workers)
	out, _ := json.Marshal(map[string]any{"jobs_per_s": rate, "failed": p.failed.Load()})
	fmt.Println(string(out))
}
