package testenv

import (
	"errors"
	"net"
	"net/smtp"
	"strconv"
	"strings"
	"testing"
)

func TestSMTPServer(t *testing.T) {
	var s *SMTPServer
	t.Run("mail", func(t *testing.T) {
		s = StartSMTPServer(t)
		addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
		if s.Host != "127.0.0.1" || !strings.HasPrefix(s.APIURL, "http://127.0.0.1:") {
			t.Fatalf("server at %s, API at %s", addr, s.APIURL)
		}

		body := "Hello,\r\n\r\nyour session ends in 10 minutes.\r\n"
		msg := "From: Calipso <calipso@example.org>\r\n" +
			"To: alice@example.org\r\n" +
			"Subject: Your session expires soon\r\n" +
			"Content-Type: text/plain; charset=utf-8\r\n" +
			"\r\n" + body
		if err := smtp.SendMail(addr, nil, "calipso@example.org", []string{"alice@example.org"}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		m := s.WaitFor(t, "Alice@example.org", "expires soon")
		if m.ID == "" || m.From != "calipso@example.org" || len(m.To) != 1 || m.To[0] != "alice@example.org" ||
			m.Subject != "Your session expires soon" {
			t.Errorf("received %+v", m)
		}
		if want := "Hello,\r\n\r\nyour session ends in 10 minutes."; strings.TrimRight(m.Text, "\r\n") != want {
			t.Errorf("text %q, want %q", m.Text, want)
		}

		// Authenticated, with any credentials: AUTH PLAIN (net/smtp sends it without
		// TLS to localhost only), and AUTH LOGIN; and no STARTTLS on offer.
		c, err := smtp.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.Extension("STARTTLS"); ok {
			t.Error("STARTTLS offered")
		}
		ok, mechs := c.Extension("AUTH")
		if !ok || !strings.Contains(mechs, "PLAIN") || !strings.Contains(mechs, "LOGIN") {
			t.Errorf("AUTH %v %q", ok, mechs)
		}
		c.Close()
		second := "From: calipso@example.org\r\nTo: bob@example.org\r\nSubject: second\r\n\r\nTwo.\r\n"
		if err := smtp.SendMail(addr, smtp.PlainAuth("", "anyone", "anything", s.Host), "calipso@example.org",
			[]string{"bob@example.org", "hidden@example.org"}, []byte(second)); err != nil {
			t.Fatal(err)
		}
		if m := s.WaitFor(t, "hidden@example.org", "second"); m.Subject != "second" || m.To[0] != "bob@example.org" {
			t.Errorf("received %+v", m)
		}
		c, err = smtp.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(loginAuth{"someone", "secret"}); err != nil {
			t.Fatalf("AUTH LOGIN: %v", err)
		}
		if err := c.Mail("calipso@example.org"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("carol@example.org"); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte("From: calipso@example.org\r\nTo: carol@example.org\r\nSubject: third\r\n\r\nThree.\r\n"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		_ = c.Quit()
		s.WaitFor(t, "carol@example.org", "third")

		var subjects []string
		for _, m := range s.Messages(t) {
			subjects = append(subjects, m.Subject)
		}
		if got := strings.Join(subjects, "|"); got != "Your session expires soon|second|third" {
			t.Errorf("messages oldest first: %s", got)
		}
	})
	if s == nil {
		return // skipped
	}
	if s.cmd.ProcessState == nil {
		t.Error("mailpit still runs after the test's cleanup")
	}
}

// loginAuth is AUTH LOGIN, which net/smtp does not have.
type loginAuth struct{ user, password string }

func (a loginAuth) Start(*smtp.ServerInfo) (string, []byte, error) { return "LOGIN", nil, nil }

func (a loginAuth) Next(challenge []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	switch strings.ToLower(strings.TrimSpace(string(challenge))) {
	case "username:":
		return []byte(a.user), nil
	case "password:":
		return []byte(a.password), nil
	}
	return nil, errors.New("unexpected AUTH LOGIN challenge " + string(challenge))
}
