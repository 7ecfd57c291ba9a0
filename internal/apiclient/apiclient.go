// Package apiclient calls a Calipso server over HTTP: a Client is one browser session
// of the compat API (a cookie jar, Django's CSRF dance: the csrftoken cookie echoed as
// X-CSRFToken, JSON bodies), with which the load tool (cmd/calipso-load) and the
// end-to-end tests drive servers; Healthy is `calipso healthcheck`'s question.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"time"
)

// Client is one logged-in (or not yet) session.
type Client struct {
	base *url.URL // ends with the base path's "/"
	hc   *http.Client
}

// New returns a session of the API at base (base path included).
func New(base string, timeout time.Duration) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("url %q: want http(s)://host:port/base-path/", base)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	jar, _ := cookiejar.New(nil)
	return &Client{base: u, hc: &http.Client{Jar: jar, Timeout: timeout}}, nil
}

// UseTransport sends the session's requests through rt (a load balancer in front of
// several servers, say) instead of the default transport.
func (c *Client) UseTransport(rt http.RoundTripper) { c.hc.Transport = rt }

// Call sends method to path (relative to the base) and returns the status and body.
func (c *Client) Call(ctx context.Context, method, path string, body any) (int, []byte, error) {
	u := c.base.ResolveReference(&url.URL{Path: strings.TrimPrefix(path, "/")})
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, ck := range c.hc.Jar.Cookies(u) {
		if ck.Name == "csrftoken" {
			req.Header.Set("X-CSRFToken", ck.Value)
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, b, err
}

// Login gets a CSRF cookie the way the frontend does (any GET) and logs in.
func (c *Client) Login(ctx context.Context, user, password string) error {
	if status, _, err := c.Call(ctx, http.MethodGet, "settings/", nil); err != nil || status != http.StatusOK {
		return fmt.Errorf("login %s: settings/: status %d: %w", user, status, err)
	}
	status, body, err := c.Call(ctx, http.MethodPost, "login/", map[string]string{"username": user, "password": password})
	if err != nil {
		return fmt.Errorf("login %s: %w", user, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("login %s: status %d: %s", user, status, bytes.TrimSpace(body))
	}
	return nil
}

// SessionRefs lists the "proposal~session" refs of the user's experiments (first page).
func (c *Client) SessionRefs(ctx context.Context, user string) ([]string, error) {
	status, body, err := c.Call(ctx, http.MethodGet, "users/"+url.PathEscape(user)+"/experiments/", nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("experiments of %s: status %d: %s", user, status, bytes.TrimSpace(body))
	}
	var page struct {
		Results []struct {
			ProposalID string `json:"proposal_id"`
			Sessions   []struct {
				SessionNumber string `json:"session_number"`
			} `json:"sessions"`
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return nil, fmt.Errorf("experiments of %s: %w", user, err)
	}
	var refs []string
	for _, e := range page.Results {
		for _, s := range e.Sessions {
			refs = append(refs, e.ProposalID+"~"+s.SessionNumber)
		}
	}
	return refs, nil
}

// Container is what the API answers for a resource (the fields the tools use).
type Container struct {
	Name       string `json:"container_name"`
	Status     string `json:"container_status"`
	Experiment string `json:"calipso_experiment"`
	PublicName string `json:"public_name"`
	HostPort   string `json:"host_port"`
}

// LaunchPath, StopPath and RemovePath are the compat API's resource calls.
func LaunchPath(user, ref, image string) string {
	return "resource/run/" + url.PathEscape(user) + "/" + url.PathEscape(ref) + "/" + url.PathEscape(image) + "/"
}

func StopPath(user, name, image string) string {
	return "resource/stop/" + url.PathEscape(user) + "/" + url.PathEscape(name) + "/" + url.PathEscape(image) + "/"
}

func RemovePath(user, name, image string) string {
	return "resource/rm/" + url.PathEscape(user) + "/" + url.PathEscape(name) + "/" + url.PathEscape(image) + "/"
}

// Remove stops then removes, as the frontend does; the status is the first failure's,
// or the removal's.
func (c *Client) Remove(ctx context.Context, user string, rec Container) (int, error) {
	status, _, err := c.Call(ctx, http.MethodGet, StopPath(user, rec.Name, rec.PublicName), nil)
	if err != nil || status >= 400 {
		return status, err
	}
	status, _, err = c.Call(ctx, http.MethodGet, RemovePath(user, rec.Name, rec.PublicName), nil)
	return status, err
}

// Healthy asks the server listening at listen (host:port, as the settings' listen
// gives it; an unspecified host is asked on loopback) for /healthz, within 3s.
func Healthy(ctx context.Context, listen string) error {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s", resp.Status)
	}
	return nil
}
