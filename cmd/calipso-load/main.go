// Command calipso-load drives logins, reads, launches and removals against a running
// Calipso server through its compat API, as the frontend makes them, and prints
// throughput, latency percentiles and errors per operation. It needs no settings and
// loads loopback servers only.
//
//	go run ./cmd/calipso-load --users alice:alice-demo,bob:bob-demo --mix 1,0,0 --duration 30s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "calipso-load:", err)
		}
		os.Exit(1)
	}
}

// run is main without the process. The tool reads no environment: getenv is there so
// that it is called like every command of the repository.
func run(ctx context.Context, args []string, _ func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	return drive(ctx, cfg, stdout)
}

// config is what the tool was asked to do.
type config struct {
	base        string
	users       [][2]string // username, password
	concurrency int
	duration    time.Duration
	requests    int // 0: until duration
	mix         [3]int
	image       string
	timeout     time.Duration
}

// maxDuration bounds a run whatever the flags say: the tool never runs unattended forever.
const maxDuration = time.Hour

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("calipso-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:8000/calipsoplus-services/", "base URL of the API, base path included (loopback only)")
	users := fs.String("users", "", "user1:pass1,user2:pass2 (or --user-prefix)")
	prefix := fs.String("user-prefix", "", "users PREFIX1..PREFIXn (with --user-count and --password)")
	count := fs.Int("user-count", 1, "number of users with --user-prefix")
	password := fs.String("password", "", "password of --user-prefix users; {user} is replaced by the username")
	concurrency := fs.Int("concurrency", 4, "concurrent clients (spread over the users)")
	duration := fs.Duration("duration", 10*time.Second, "how long to run (at most 1h)")
	requests := fs.Int("requests", 0, "stop after this many operations in all (0: run for --duration)")
	mix := fs.String("mix", "8,1,1", "relative weights of reads,launches,removals")
	image := fs.String("image", "base_image", "public name of the image to launch")
	timeout := fs.Duration("timeout", 5*time.Minute, "per-request timeout (launches wait for the engine)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: calipso-load [flags]\n\nLogs users in and drives reads, launches and removals against a server; prints\nthroughput, latency percentiles and errors per operation.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg := config{base: *base, concurrency: *concurrency, duration: *duration, requests: *requests, image: *image, timeout: *timeout}
	u, err := url.Parse(cfg.base)
	if err != nil || u.Hostname() == "" {
		return cfg, fmt.Errorf("--url %q is not a URL", cfg.base)
	}
	if !isLoopback(u.Hostname()) {
		return cfg, fmt.Errorf("--url %q: only loopback servers may be loaded (localhost, 127.0.0.0/8, ::1)", cfg.base)
	}
	switch {
	case *users != "" && *prefix != "":
		return cfg, errors.New("give --users or --user-prefix, not both")
	case *users != "":
		for _, pair := range strings.Split(*users, ",") {
			name, pass, ok := strings.Cut(strings.TrimSpace(pair), ":")
			if !ok || name == "" {
				return cfg, fmt.Errorf("--users entry %q: want user:password", pair)
			}
			cfg.users = append(cfg.users, [2]string{name, pass})
		}
	case *prefix != "":
		if *count < 1 || *count > 10000 {
			return cfg, errors.New("--user-count must be 1 to 10000")
		}
		for i := 1; i <= *count; i++ {
			name := *prefix + strconv.Itoa(i)
			cfg.users = append(cfg.users, [2]string{name, strings.ReplaceAll(*password, "{user}", name)})
		}
	default:
		return cfg, errors.New("--users or --user-prefix is required")
	}
	if cfg.concurrency < 1 || cfg.concurrency > 10000 {
		return cfg, errors.New("--concurrency must be 1 to 10000")
	}
	if cfg.duration <= 0 || cfg.duration > maxDuration {
		return cfg, fmt.Errorf("--duration must be above 0 and at most %s", maxDuration)
	}
	if cfg.requests < 0 {
		return cfg, errors.New("--requests must not be negative")
	}
	parts := strings.Split(*mix, ",")
	if len(parts) != 3 {
		return cfg, fmt.Errorf("--mix %q: want reads,launches,removals", *mix)
	}
	total := 0
	for i, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 {
			return cfg, fmt.Errorf("--mix %q: weights are whole numbers >= 0", *mix)
		}
		cfg.mix[i] = n
		total += n
	}
	if total == 0 {
		return cfg, errors.New("--mix: at least one weight must be above 0")
	}
	return cfg, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
