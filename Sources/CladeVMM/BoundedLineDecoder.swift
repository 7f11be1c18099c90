import NIOCore

/// Splits a byte stream into newline-terminated lines, like NIOExtras' `LineBasedFrameDecoder`,
/// but refuses a peer that sends a line longer than `maximumLength` or more than
/// `maximumLinesPerSecond` lines: the peer may be a hostile guest, and an unbounded line would
/// be buffered whole in clade's memory. The error closes that one connection.
public struct BoundedLineDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer

    /// Large enough for the agent's biggest message (a 1 MiB file chunk, base64 in JSON).
    public static let defaultMaximumLength = 8 << 20
    /// Far above what a real agent sends (output arrives in chunks of up to 64 KiB).
    public static let defaultMaximumLinesPerSecond = 50_000

    let maximumLength: Int
    let maximumLinesPerSecond: Int
    let peer: String
    private var scanned = 0
    private var windowStart = NIODeadline.now()
    private var linesInWindow = 0

    public init(peer: String, maximumLength: Int = defaultMaximumLength, maximumLinesPerSecond: Int = defaultMaximumLinesPerSecond) {
        self.peer = peer
        self.maximumLength = maximumLength
        self.maximumLinesPerSecond = maximumLinesPerSecond
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let view = buffer.readableBytesView
        if let newline = view.dropFirst(scanned).firstIndex(of: UInt8(ascii: "\n")) {
            let length = newline - view.startIndex
            guard length <= maximumLength else { throw tooLong() }
            var line = buffer.readSlice(length: length + 1)!
            line.moveWriterIndex(to: line.writerIndex - 1)
            if line.readableBytesView.last == UInt8(ascii: "\r") { line.moveWriterIndex(to: line.writerIndex - 1) }
            scanned = 0
            try countLine()
            context.fireChannelRead(wrapInboundOut(line))
            return .continue
        }
        scanned = view.count
        guard scanned <= maximumLength else { throw tooLong() }
        return .needMoreData
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }

    private mutating func countLine() throws {
        let now = NIODeadline.now()
        if now - windowStart > .seconds(1) {
            windowStart = now
            linesInWindow = 0
        }
        linesInWindow += 1
        guard linesInWindow <= maximumLinesPerSecond else {
            throw ChannelError.malformed("\(peer) sent more than \(maximumLinesPerSecond) messages in one second; clade closed the connection")
        }
    }

    private func tooLong() -> ChannelError {
        .malformed("\(peer) sent a line longer than \(maximumLength) bytes; clade closed the connection")
    }
}
