package server_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/settings"
)

// Benchmarks run the real server on real TCP with a logged-in session (SQLite), with
// keep-alive clients in parallel: ns/op is the inverse of the throughput (req/s =
// 1e9 / ns/op) of client and server sharing the machine's cores. Reads are measured
// with a load-tool client (client=raw) and with net/http's (client=net/http).

func benchHarness(b *testing.B) (*harness, *browser) {
	b.Helper()
	h := newHarness(b, withSettings(func(s *settings.Settings) { s.UserOffice.DynamicExperiments = false }))
	tr := h.srv.Client().Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	br := h.loggedIn("alice")
	br.c.Transport = tr
	return h, br
}

// hit sends one request and checks its status; body may be nil.
func hit(b *testing.B, c *http.Client, method, target, body string, header http.Header, want int) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		b.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		b.Fatalf("%s %s: %d, want %d", method, target, resp.StatusCode, want)
	}
}

// benchGET measures GET path twice: with a minimal keep-alive HTTP/1.1 client, as
// load tools such as wrk are (the figure to compare with a server measured by one),
// and with Go's net/http client, whose own cost shares the cores with the server.
func benchGET(b *testing.B, br *browser, path string) {
	b.Helper()
	target := br.h.api(path)
	hit(b, br.c, http.MethodGet, target, "", nil, http.StatusOK) // warm
	u, err := url.Parse(target)
	if err != nil {
		b.Fatal(err)
	}
	var cookies []string
	for _, c := range br.c.Jar.Cookies(u) {
		cookies = append(cookies, c.Name+"="+c.Value)
	}
	b.Run("client=raw", func(b *testing.B) {
		raw := []byte("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
			"\r\nCookie: " + strings.Join(cookies, "; ") + "\r\nAccept: application/json\r\n\r\n")
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			conn, err := net.Dial("tcp", u.Host)
			if err != nil {
				b.Error(err)
				return
			}
			defer conn.Close()
			rd := bufio.NewReaderSize(conn, 64<<10)
			for pb.Next() {
				if _, err := conn.Write(raw); err != nil {
					b.Error(err)
					return
				}
				status, err := readRawResponse(rd)
				if err != nil || status != http.StatusOK {
					b.Errorf("GET %s: %d %v", target, status, err)
					return
				}
			}
		})
		reportRate(b)
	})
	b.Run("client=net/http", func(b *testing.B) {
		c := &http.Client{Transport: br.c.Transport}
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			// One request per client, sent again and again with the session's cookies
			// (a GET has no body to rewind), by a client without a jar.
			req, err := http.NewRequest(http.MethodGet, target, nil)
			if err != nil {
				b.Error(err)
				return
			}
			req.Header.Set("Cookie", strings.Join(cookies, "; "))
			for pb.Next() {
				resp, err := c.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("GET %s: %d", target, resp.StatusCode)
					return
				}
			}
		})
		reportRate(b)
	})
}

// readRawResponse reads one response with a Content-Length (the server sends one with
// every JSON answer) and returns its status.
func readRawResponse(rd *bufio.Reader) (int, error) {
	line, err := rd.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	fields := bytes.Fields(line)
	if len(fields) < 2 {
		return 0, fmt.Errorf("status line %q", line)
	}
	status, err := strconv.Atoi(string(fields[1]))
	if err != nil {
		return 0, fmt.Errorf("status line %q", line)
	}
	length := -1
	for {
		line, err := rd.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
				return 0, fmt.Errorf("content length %q", v)
			}
		}
	}
	if length < 0 {
		return 0, errors.New("response without Content-Length")
	}
	_, err = rd.Discard(length)
	return status, err
}

// parallelism × GOMAXPROCS clients keep requests in flight while others wait on the
// network, as a browser crowd does.
const parallelism = 8

func reportRate(b *testing.B) {
	if e := b.Elapsed(); e > 0 {
		b.ReportMetric(float64(b.N)/e.Seconds(), "req/s")
	}
}

func BenchmarkGetUser(b *testing.B) {
	_, br := benchHarness(b)
	benchGET(b, br, "users/alice/")
}

func BenchmarkAuthenticated(b *testing.B) {
	_, br := benchHarness(b)
	benchGET(b, br, "authenticated/")
}

func BenchmarkImages(b *testing.B) {
	_, br := benchHarness(b)
	benchGET(b, br, "images/")
}

func BenchmarkLogin(b *testing.B) {
	_, br := benchHarness(b)
	header := http.Header{
		"Content-Type": {"application/json"}, "Origin": {frontendOrigin}, "X-CSRFToken": {br.csrfToken()},
	}
	target := br.h.api("login/")
	body := `{"username": "alice", "password": "alice-demo"}`
	// Each login rotates the session: clients without a jar keep only the csrftoken.
	c := &http.Client{Transport: br.c.Transport}
	header.Set("Cookie", "csrftoken="+br.csrfToken())
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			hit(b, c, http.MethodPost, target, body, header, http.StatusOK)
		}
	})
	reportRate(b)
}

func BenchmarkExperimentsPage(b *testing.B) {
	h, br := benchHarness(b)
	ctx := context.Background()
	start := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 500 {
		e := calipso.Experiment{
			ProposalID: fmt.Sprintf("P%05d", i), Subject: fmt.Sprintf("Subject %d of the benchmark", i),
			Body: "A body of some length to look like a real proposal abstract.", BeamLine: fmt.Sprintf("BL%02d", i%30),
		}
		for s := range 3 {
			e.Sessions = append(e.Sessions, calipso.Session{
				SessionNumber: fmt.Sprintf("P%05d-%02d", i, s), Subject: "Shift", DataSetPath: "[]",
				StartDate: start.AddDate(0, 0, i+s), EndDate: start.AddDate(0, 0, i+s+1),
			})
		}
		if _, err := h.db.PutExperiment(ctx, "bench", e); err != nil {
			b.Fatal(err)
		}
		if err := h.db.Link(ctx, "bench", "alice", e.ProposalID); err != nil {
			b.Fatal(err)
		}
	}
	benchGET(b, br, "users/alice/experiments/?page=3&ordering=-subject")
}
