package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SMTPServer is a real SMTP server of one test's own: mailpit, on free loopback ports,
// its database in the test's temporary directory, stopped when the test ends. Its SMTP
// listener has no TLS (no STARTTLS is offered) and needs no authentication, but takes
// AUTH PLAIN and AUTH LOGIN with any username and password, so a client configured to
// authenticate works too. What it received is read with Messages and WaitFor (through
// mailpit's HTTP API at APIURL).
type SMTPServer struct {
	Host   string // "127.0.0.1"
	Port   int    // the SMTP port
	APIURL string // mailpit's HTTP base URL (no trailing slash): its API is under /api/v1

	logPath string
	cmd     *exec.Cmd
	api     *http.Client
}

// Message is one received mail.
type Message struct {
	ID      string   // mailpit's database ID
	From    string   // the address of the From header
	To      []string // the addresses of the To header
	Subject string
	Text    string // the plain text body, decoded (its line breaks as sent, e.g. "\r\n")
}

// StartSMTPServer starts mailpit (CALIPSO_TEST_MAILPIT, built by deploy/test.sh) and
// waits until its HTTP API answers and its SMTP port takes connections; it skips the
// test (fails it under CI) when mailpit is not there.
func StartSMTPServer(t testing.TB) *SMTPServer {
	t.Helper()
	bin := os.Getenv("CALIPSO_TEST_MAILPIT")
	if bin == "" {
		Missing(t, "mailpit", "CALIPSO_TEST_MAILPIT is not set")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("CALIPSO_TEST_MAILPIT: %v", err)
	}
	dir := t.TempDir()
	// Two free ports, taken and let go: another process may grab one in between, so
	// a start that fails on a bound port is tried again on new ones.
	var last string
	for attempt := 0; attempt < 3; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			t.Fatalf("free ports for mailpit: %v", err)
		}
		s := &SMTPServer{
			Host:    "127.0.0.1",
			Port:    ports[0],
			APIURL:  fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
			logPath: filepath.Join(dir, fmt.Sprintf("mailpit-%d.log", attempt)),
			api:     &http.Client{Timeout: 10 * time.Second},
		}
		err = s.start(t, bin, dir, filepath.Join(dir, fmt.Sprintf("mailpit-%d.db", attempt)))
		if err == nil {
			return s
		}
		log, _ := os.ReadFile(s.logPath)
		last = fmt.Sprintf("%v\n--- mailpit's log (%s) ---\n%s", err, s.logPath, mailpitLogTail(s.logPath))
		if !bytes.Contains(log, []byte("address already in use")) {
			break
		}
	}
	t.Fatalf("mailpit did not come up: %s", last)
	return nil
}

// start runs mailpit and waits until its API is ready and its SMTP port greets.
func (s *SMTPServer) start(t testing.TB, bin, dir, dbPath string) error {
	t.Helper()
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(bin,
		"--database", dbPath,
		"--smtp", net.JoinHostPort(s.Host, strconv.Itoa(s.Port)),
		"--listen", strings.TrimPrefix(s.APIURL, "http://"),
		// Any AUTH PLAIN/LOGIN credentials pass (and none is needed), without TLS.
		"--smtp-auth-accept-any", "--smtp-auth-allow-insecure",
		"--smtp-disable-rdns", "--disable-version-check",
		"--verbose",  // its log, shown when the test fails, then has every SMTP exchange
		"--max", "0", // keep every message (the default drops all but the last 500)
	)
	// A clean environment: mailpit reads any MP_* variable as an option.
	cmd.Env = []string{"HOME=" + dir, "TMPDIR=" + dir, "PATH=" + os.Getenv("PATH")}
	c, err := startChild(cmd, dir, logFile)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := waitOK(ctx, s.APIURL+"/readyz", c.exited); err != nil {
		c.stop()
		if errors.Is(err, errExited) {
			return fmt.Errorf("mailpit exited (%v) before its API answered", c.err)
		}
		return err
	}
	if err := waitGreeting(ctx, net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), c.exited); err != nil {
		c.stop()
		if errors.Is(err, errExited) {
			return fmt.Errorf("mailpit exited (%v) before its SMTP port answered", c.err)
		}
		return err
	}
	s.cmd = cmd
	// On failure (of StartSMTPServer's caller, Messages or WaitFor alike) the tail of
	// mailpit's log is shown here, once.
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("mailpit's log (%s), last lines:\n%s", s.logPath, mailpitLogTail(s.logPath))
		}
	})
	return nil
}

// waitGreeting polls addr until it accepts a connection and sends an SMTP greeting
// (220), the context ends or the process exits (errExited).
func waitGreeting(ctx context.Context, addr string, exited <-chan struct{}) error {
	var last error
	for {
		last = greeting(ctx, addr)
		if last == nil {
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("SMTP on %s did not answer: %v", addr, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func greeting(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("SMTP greeting %q", strings.TrimSpace(line))
	}
	_, _ = io.WriteString(c, "QUIT\r\n")
	return nil
}

// mailpitLogTail is the end of mailpit's log without its database timings ("[db] ..."
// lines), which the polling of Messages and WaitFor would fill it with.
func mailpitLogTail(path string) string {
	log, _ := os.ReadFile(path)
	var keep []string
	for _, line := range strings.Split(string(log), "\n") {
		if !strings.Contains(line, `msg="[db] `) {
			keep = append(keep, line)
		}
	}
	return tail(strings.Join(keep, "\n"), 60)
}

// mailpit's JSON (its API's field names).
type mpAddress struct {
	Name    string
	Address string
}

type mpSummary struct {
	ID       string
	From     *mpAddress
	To       []mpAddress
	Cc       []mpAddress
	Bcc      []mpAddress
	Subject  string
	Created  time.Time
	Username string
}

type mpMessage struct {
	ID      string
	From    *mpAddress
	To      []mpAddress
	Subject string
	Text    string
}

// getJSON GETs path (under APIURL) and decodes the JSON answer into out; an answer
// other than 200 is an error with mailpit's text.
func (s *SMTPServer) getJSON(ctx context.Context, path string, query url.Values, out any) error {
	u := s.APIURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	res, err := s.api.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, res.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("GET %s: %v", path, err)
	}
	return nil
}

// summaries lists every message's summary, oldest first (mailpit lists newest first,
// in pages).
func (s *SMTPServer) summaries(ctx context.Context) ([]mpSummary, error) {
	const limit = 500
	var all []mpSummary
	for start := 0; ; start += limit {
		var page struct {
			MessagesCount int `json:"messages_count"`
			Messages      []mpSummary
		}
		q := url.Values{"start": {strconv.Itoa(start)}, "limit": {strconv.Itoa(limit)}}
		if err := s.getJSON(ctx, "/api/v1/messages", q, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Messages...)
		if len(page.Messages) < limit || len(all) >= page.MessagesCount {
			break
		}
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	return all, nil
}

// message reads one message in full.
func (s *SMTPServer) message(ctx context.Context, id string) (Message, error) {
	var m mpMessage
	if err := s.getJSON(ctx, "/api/v1/message/"+url.PathEscape(id), nil, &m); err != nil {
		return Message{}, err
	}
	msg := Message{ID: m.ID, Subject: m.Subject, Text: m.Text, To: []string{}}
	if m.From != nil {
		msg.From = m.From.Address
	}
	for _, a := range m.To {
		msg.To = append(msg.To, a.Address)
	}
	return msg, nil
}

// Messages lists what was received, oldest first.
func (s *SMTPServer) Messages(t testing.TB) []Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := s.summaries(ctx)
	if err != nil {
		t.Fatalf("mailpit: %v", err)
	}
	msgs := make([]Message, 0, len(list))
	for _, sum := range list {
		m, err := s.message(ctx, sum.ID)
		if err != nil {
			t.Fatalf("mailpit: %v", err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// WaitFor waits (up to 10 s) until a message to `to` (an address of its To, Cc or Bcc,
// compared without regard to case; Bcc are the envelope recipients that no header
// names) whose subject contains subjectPart has arrived, and returns it: the oldest
// such message when there are several. It fails the test when none comes, showing what
// did arrive (and, at cleanup, mailpit's log).
func (s *SMTPServer) WaitFor(t testing.TB, to, subjectPart string) Message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var (
		list []mpSummary
		err  error
	)
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(5*time.Second))
		list, err = s.summaries(ctx)
		if err == nil {
			for _, sum := range list {
				if sum.sentTo(to) && strings.Contains(sum.Subject, subjectPart) {
					var m Message
					m, err = s.message(ctx, sum.ID)
					cancel()
					if err != nil {
						t.Fatalf("mailpit: %v", err)
					}
					return m
				}
			}
		}
		cancel()
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var got strings.Builder
	for _, sum := range list {
		fmt.Fprintf(&got, "  to %s: %q\n", strings.Join(sum.recipients(), ", "), sum.Subject)
	}
	if err != nil {
		fmt.Fprintf(&got, "  (last error: %v)\n", err)
	}
	t.Fatalf("no mail to %s with %q in its subject within 10 s; received %d:\n%s",
		to, subjectPart, len(list), got.String())
	return Message{}
}

func (m mpSummary) recipients() []string {
	var all []string
	for _, list := range [][]mpAddress{m.To, m.Cc, m.Bcc} {
		for _, a := range list {
			all = append(all, a.Address)
		}
	}
	return all
}

func (m mpSummary) sentTo(addr string) bool {
	for _, a := range m.recipients() {
		if strings.EqualFold(a, addr) {
			return true
		}
	}
	return false
}
