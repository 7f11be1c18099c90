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

/// Where a live memory copy puts its results, and what the engine does at its fixed points.
public struct LiveCopyPlan: Sendable {
    /// The new memory file (created, sized to guest RAM and sparse) that receives RAM.
    public var memoryFile: URL
    public var memoryBytes: Int64
    /// The file the running guest's RAM is mapped from (its pages are mapped in before the pause).
    public var sourceMemoryFile: URL
    /// Where the device state, saved while the guest is stopped, goes.
    public var deviceState: URL
    /// The overlay the disk moves onto while the guest is stopped (see ``VMHandle/freezeDisk(onto:)``).
    public var diskOverlay: URL
    /// Called once the disk has moved onto ``diskOverlay``: from then on the machine writes
    /// there, even if the copy fails later.
    public var onDiskFrozen: @Sendable () -> Void

    public init(memoryFile: URL, memoryBytes: Int64, sourceMemoryFile: URL, deviceState: URL, diskOverlay: URL, onDiskFrozen: @escaping @Sendable () -> Void) {
        self.memoryFile = memoryFile
        self.memoryBytes = memoryBytes
        self.sourceMemoryFile = sourceMemoryFile
        self.deviceState = deviceState
        self.diskOverlay = diskOverlay
        self.onDiskFrozen = onDiskFrozen
    }
}

/// What a live memory copy did.
public struct LiveCopyReport: Sendable {
    /// From the guest's stop to its continue, by the hypervisor's own clock.
    public var pauseMilliseconds: Double
    /// Pages with data written into the memory file.
    public var pagesWritten: Int
    /// Pages sent as zero, left as holes.
    public var zeroPages: Int
    /// Mapping the guest's pages in before the pause (the guest runs meanwhile).
    public var prefaultMilliseconds: Double = 0

    public init(pauseMilliseconds: Double, pagesWritten: Int, zeroPages: Int) {
        self.pauseMilliseconds = pauseMilliseconds
        self.pagesWritten = pagesWritten
        self.zeroPages = zeroPages
    }
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
    /// Runs a guest that a dead clade process left stopped in the middle of an operation,
    /// whatever that operation was doing (a plain ``resume()`` where there is nothing more to undo).
    func resumeAfterInterruption() async throws
    /// Pauses the machine and writes its state to `file`; it stays paused.
    func saveState(to file: URL, kind: SavedStateKind) async throws
    /// Loads state into a machine launched with ``MachineSpec/restoring`` and runs it.
    func restoreState(from file: URL, kind: SavedStateKind) async throws
    /// Reads guest pages from a paused machine whose RAM maps `memoryFile`.
    func captureMemory(_ selection: PageSelection, memoryFile: URL) async throws -> CapturedMemory
    /// Makes `overlay` (an existing layer backed by the current disk) the disk the guest writes to.
    func freezeDisk(onto overlay: URL) async throws
    /// Copies guest RAM into a new memory file while the guest runs, then stops it only to save
    /// its device state, freeze its disk and copy what it dirtied last; the result is one point in
    /// time. The machine runs again when this returns, also when it throws.
    func copyMemoryLive(_ plan: LiveCopyPlan) async throws -> LiveCopyReport
    /// Forwards TCP connections to `127.0.0.1:hostPort` on the host to `guestPort` in the guest.
    /// Throws ``VMMError/agentPortTaken`` when the host port is in use.
    func forwardPort(host hostPort: Int, guest guestPort: Int) async throws
    /// Stops the machine: politely, then by force. Returns when it is gone.
    func stop() async
    /// The last lines the guest wrote to its console, for error messages.
    func consoleTail(lines: Int) -> String
}

extension VMHandle {
    public func resumeAfterInterruption() async throws { try await resume() }

    public func captureMemory(_ selection: PageSelection, memoryFile: URL) async throws -> CapturedMemory {
        throw VMMError.unsupported(backend: backendName, operation: selection == .all ? "capture all guest memory" : "capture dirty pages")
    }

    public func freezeDisk(onto overlay: URL) async throws {
        throw VMMError.unsupported(backend: backendName, operation: "freeze the disk of a running guest")
    }

    public func copyMemoryLive(_ plan: LiveCopyPlan) async throws -> LiveCopyReport {
        throw VMMError.unsupported(backend: backendName, operation: "copy guest memory while the guest runs")
    }

    public func forwardPort(host hostPort: Int, guest guestPort: Int) async throws {
        throw VMMError.unsupported(backend: backendName, operation: "publish a guest port")
    }
}
