// Package cliflags parses the management commands' command lines: flags may come
// after the positional arguments (`calipso user add bob --admin`), which the standard
// library's flag package stops at.
package cliflags

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// New returns a flag set that reports errors to its caller, not to stderr.
func New(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// Parse parses fs's flags among args and wants n positional arguments (usage is the
// command's, for the error).
func Parse(fs *flag.FlagSet, args []string, n int, usage string) ([]string, error) {
	pos, err := Split(fs, args)
	if err != nil {
		return nil, err
	}
	return pos, Want(pos, n, usage)
}

// Split parses the flags among args and returns the rest.
func Split(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	for _, p := range pos {
		if strings.HasPrefix(p, "-") {
			return nil, fmt.Errorf("flag %s after --", p)
		}
	}
	return pos, nil
}

// Want checks the number of positional arguments.
func Want(args []string, n int, usage string) error {
	if len(args) != n {
		return fmt.Errorf("usage: calipso %s", usage)
	}
	return nil
}

// ID defines a flag for a non-negative whole number that may be left unset (nil).
func ID(fs *flag.FlagSet, name string) **int {
	var v *int
	fs.Func(name, "", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errors.New("want a non-negative whole number")
		}
		v = &n
		return nil
	})
	return &v
}
