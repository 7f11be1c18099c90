import Foundation

/// Whether a machine's vCPUs run.
public enum MachineStatus: String, Sendable {
    case running
    case paused
    /// The process is gone or does not answer.
    case unreachable
}

/// How saved state relates to guest RAM.
public enum SavedStateKind: String, Sendable {
    /// Device state only; RAM is the memory file the machine maps shared, left where it is.
    case memoryInSharedFile
    /// Device state only, with no RAM and no configuration; the caller captures the pages it needs.
    case devicesOnly
}

/// Which guest pages to capture.
public enum PageSelection: Sendable {
    /// Pages the guest wrote since it was restored from its memory file.
    case written
    /// Every page of guest RAM.
    case all
}

/// Guest pages read from a paused machine, ready to be written into a memory file.
public struct CapturedMemory: Sendable {
    public var pages: DirtyPages
    public var contents: [UInt8]

    public init(pages: DirtyPages, contents: [UInt8]) {
        self.pages = pages
        self.contents = contents
    }

    public static let none = CapturedMemory(pages: .none, contents: [])

    /// Writes the pages at their offsets in `file` (zero pages as zeros: the file may be layered on a base).
    public func write(into file: URL) throws { try pages.write(contents, into: file) }
}

/// One running machine. A handle owns nothing the store does not know: it can be recreated
/// with ``VMBackend/attach(runtimeDirectory:pid:)`` after clade restarts.
public protocol VMHandle: Sendable {
    var backendName: String { get }
    /// The machine's host process id (recorded so a restarted clade finds it again).
    var pid: Int32 { get }
    /// True while the machine's process runs.
    var isAlive: Bool { get }
    /// Running or paused, asked of the machine itself within `timeout` seconds.
    func status(timeout: Double) async -> MachineStatus
    func pause() async throws
    func resume() async throws
    /// Pauses the machine and writes its state to `file`; it stays paused.
    func saveState(to file: URL, kind: SavedStateKind) async throws
    /// Loads state into a machine launched with ``MachineSpec/restoring`` and runs it.
    func restoreState(from file: URL, kind: SavedStateKind) async throws
    /// Reads guest pages from a paused machine whose RAM maps `memoryFile`.
    func captureMemory(_ selection: PageSelection, memoryFile: URL) async throws -> CapturedMemory
    /// Makes `overlay` (an existing layer backed by the current disk) the disk the guest writes to.
    func freezeDisk(onto overlay: URL) async throws
    /// Forwards TCP connections to `127.0.0.1:hostPort` on the host to `guestPort` in the guest.
    /// Throws ``VMMError/agentPortTaken`` when the host port is in use.
    func forwardPort(host hostPort: Int, guest guestPort: Int) async throws
    /// Stops the machine: politely, then by force. Returns when it is gone.
    func stop() async
    /// The last lines the guest wrote to its console, for error messages.
    func consoleTail(lines: Int) -> String
}

extension VMHandle {
    public func captureMemory(_ selection: PageSelection, memoryFile: URL) async throws -> CapturedMemory {
        throw VMMError.unsupported(backend: backendName, operation: selection == .all ? "capture all guest memory" : "capture dirty pages")
    }

    public func freezeDisk(onto overlay: URL) async throws {
        throw VMMError.unsupported(backend: backendName, operation: "freeze the disk of a running guest")
    }

    public func forwardPort(host hostPort: Int, guest guestPort: Int) async throws {
        throw VMMError.unsupported(backend: backendName, operation: "publish a guest port")
    }
}
