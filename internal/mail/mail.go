// Package mail sends Calipso's mail (the lifecycle policies' warnings) over SMTP,
// through wneessen/go-mail.
package mail

import (
	"context"
	"fmt"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/settings"
)

// ErrSend: the SMTP server could not be reached or refused the message.
var ErrSend = calipso.NewError(calipso.EUPSTREAM, "mail not sent")

// Config is the SMTP server and the sender.
type Config struct {
	Host     string
	Port     int
	TLS      string // "starttls" (required), "tls" (implicit) or "none"
	Username string // "": no authentication
	Password string
	From     string
	Timeout  time.Duration
}

// ConfigFrom takes [mail] of the settings.
func ConfigFrom(s *settings.Settings) Config {
	m := s.Mail
	return Config{Host: m.Host, Port: m.Port, TLS: m.TLS, Username: m.Username, Password: m.Password, From: m.From, Timeout: m.Timeout.Duration}
}

// Mailer sends plain-text mail; safe for concurrent use (a connection per message:
// warnings are few).
type Mailer struct{ cfg Config }

// New checks cfg; nothing is dialled yet.
func New(cfg Config) (*Mailer, error) {
	if cfg.Host == "" || cfg.Port <= 0 || cfg.From == "" {
		return nil, fmt.Errorf("mail: host, port and from are required")
	}
	if cfg.TLS == "none" && cfg.Username != "" {
		return nil, fmt.Errorf("mail: credentials are not sent in clear: with a username, tls must be starttls or tls")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	return &Mailer{cfg: cfg}, nil
}

// Notify sends subject and body, as text, to the addresses; bounded by ctx and the
// configured timeout.
func (m *Mailer) Notify(ctx context.Context, to []string, subject, body string) error {
	msg := gomail.NewMsg()
	if err := msg.From(m.cfg.From); err != nil {
		return fmt.Errorf("%w: from %q: %w", ErrSend, m.cfg.From, err)
	}
	if err := msg.To(to...); err != nil {
		return fmt.Errorf("%w: to %v: %w", ErrSend, to, err)
	}
	msg.Subject(subject)
	msg.SetDate()
	msg.SetMessageID()
	msg.SetBodyString(gomail.TypeTextPlain, body)

	opts := []gomail.Option{gomail.WithPort(m.cfg.Port), gomail.WithTimeout(m.cfg.Timeout)}
	switch m.cfg.TLS {
	case "tls":
		opts = append(opts, gomail.WithSSL())
	case "none":
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	default:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	}
	if m.cfg.Username != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover), gomail.WithUsername(m.cfg.Username), gomail.WithPassword(m.cfg.Password))
	}
	client, err := gomail.NewClient(m.cfg.Host, opts...)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSend, err)
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	if err := client.DialAndSendWithContext(ctx, msg); err != nil {
		return fmt.Errorf("%w: via %s:%d: %w", ErrSend, m.cfg.Host, m.cfg.Port, err)
	}
	return nil
}
