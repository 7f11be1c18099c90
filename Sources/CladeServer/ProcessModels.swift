import CladeGuestProtocol
import Foundation

/// `POST /v1/sandboxes/:id/processes`.
struct ProcessStartRequest: Decodable, Sendable {
    var args: [String]?
    /// A shell command line, run with `/bin/sh -c` (instead of `args`).
    var command: String?
    var env: [String: String]?
    var cwd: String?
    var user: String?
    var tag: String?
    var timeoutSecs: Double?
    var pty: TerminalSize?
    /// Written to the process's stdin before its output streams.
    var stdin: String?
    /// Close stdin after `stdin` (default true; false keeps it open for `.../stdin`).
    var closeStdin: Bool?
    /// Answer 201 `{pid}` at once; the process keeps running on its own.
    var detach: Bool?
    /// Keep running if the client disconnects from the stream.
    var background: Bool?

    enum CodingKeys: String, CodingKey {
        case args, command, env, cwd, user, tag, pty, stdin, detach, background
        case timeoutSecs = "timeout_secs"
        case closeStdin = "close_stdin"
    }
}

/// One line of a process stream (`application/x-ndjson`).
struct ProcessStreamLine: Encodable, Sendable {
    var event: String
    var pid: Int32?
    /// `stdout` / `stderr`: the bytes, base64.
    var data: String?
    var exitCode: Int32?
    var signal: Int32?
    var timedOut: Bool?
    /// `error`: what went wrong after the stream began.
    var message: String?

    enum CodingKeys: String, CodingKey {
        case event, pid, data, signal, message
        case exitCode = "exit_code"
        case timedOut = "timed_out"
    }
}

struct ProcessStdinRequest: Decodable, Sendable {
    /// Text to write.
    var text: String?
    /// Bytes to write, base64 (wins over `text`).
    var data: String?
    /// Close stdin after writing.
    var eof: Bool?
}

struct SignalRequest: Decodable, Sendable {
    var signal: String
}

struct EvalRequest: Decodable, Sendable {
    var code: String
    var timeoutSecs: Double?
    enum CodingKeys: String, CodingKey {
        case code
        case timeoutSecs = "timeout_secs"
    }
}

struct PathRequest: Decodable, Sendable {
    var path: String
    var destination: String?
    var mode: Int?
}

/// A file-system event line of `GET .../fs/watch`.
struct WatchLine: Encodable, Sendable {
    var event: String
    var op: String?
    var path: String?
    var type: String?
    var message: String?
}
