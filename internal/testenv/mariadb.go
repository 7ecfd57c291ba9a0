package testenv

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MariaDB is a throwaway MariaDB server of one test's own (as deploy/test.sh starts
// the shared one), on a socket, so that the test can stop and restart it: the shared
// server is never stopped. It holds one database, "calipso".
type MariaDB struct {
	Sock string
	t    testing.TB
	dir  string
	cmd  *exec.Cmd
	done chan error
}

// StartMariaDB installs and starts a private server; it is stopped and removed when
// the test ends.
func StartMariaDB(t testing.TB) *MariaDB {
	t.Helper()
	for _, tool := range []string{"mariadbd", "mariadb-install-db"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				Missing(t, tool, "not installed")
			}
		}
	}
	// A short directory: a unix socket's path is limited to ~100 bytes.
	dir, err := os.MkdirTemp("", "mdb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A temporary directory of its own: servers installed at once in a shared /tmp
	// collide on their temporary tables' names.
	install := exec.Command("mariadb-install-db", "--no-defaults", "--user=root", "--datadir="+filepath.Join(dir, "data"),
		"--tmpdir="+filepath.Join(dir, "tmp"), "--auth-root-authentication-method=normal")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	m := &MariaDB{t: t, dir: dir, Sock: filepath.Join(dir, "m.sock")}
	t.Cleanup(m.Stop)
	m.Start()
	db, err := sql.Open("mysql", "root@unix("+m.Sock+")/")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE calipso CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"); err != nil {
		t.Fatal(err)
	}
	return m
}

// Start starts the server (again, on the same data) and waits until it answers.
func (m *MariaDB) Start() {
	m.t.Helper()
	bin := "mariadbd"
	if _, err := exec.LookPath(bin); err != nil {
		bin = "/usr/sbin/mariadbd"
	}
	m.cmd = exec.Command(bin, "--no-defaults", "--user=root", "--datadir="+filepath.Join(m.dir, "data"),
		"--tmpdir="+filepath.Join(m.dir, "tmp"), "--socket="+m.Sock, "--skip-networking", "--max-connections=1000",
		"--pid-file="+filepath.Join(m.dir, "m.pid"), "--log-error="+filepath.Join(m.dir, "m.err"), "--innodb-flush-log-at-trx-commit=2")
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("mariadbd: %v", err)
	}
	m.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(m.cmd, m.done)
	db, err := sql.Open("mysql", "root@unix("+m.Sock+")/")
	if err != nil {
		m.t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err = db.Ping(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(m.dir, "m.err"))
			m.t.Fatalf("private mariadbd did not start: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// DSN is the go-sql-driver DSN of the calipso database, with a 1 s dial timeout.
func (m *MariaDB) DSN() string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", "unix", m.Sock, "calipso"
	cfg.Timeout = time.Second
	cfg.ParseTime = true
	return cfg.FormatDSN()
}

// Stop shuts the server down as an operator or a crash would end it (SIGTERM: a clean
// shutdown that closes every connection), and waits for it. Stopping a stopped
// server does nothing.
func (m *MariaDB) Stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
}

func (m *MariaDB) String() string { return fmt.Sprintf("mariadbd on %s", m.Sock) }
