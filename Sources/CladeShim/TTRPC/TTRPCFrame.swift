import NIOCore

/// One ttrpc message on the wire: a 10-byte big-endian header (payload length, stream id,
/// type, flags) and the payload, a marshalled `Request` or `Response`.
public struct TTRPCFrame: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        case request = 1
        case response = 2
    }

    /// ttrpc refuses messages over 4 MiB; so does clade, before reading the payload.
    public static let maxPayload = 4 << 20
    static let headerSize = 10

    public var streamID: UInt32
    public var kind: UInt8
    public var flags: UInt8
    public var payload: [UInt8]

    public init(streamID: UInt32, kind: Kind, flags: UInt8 = 0, payload: [UInt8]) {
        self.streamID = streamID
        self.kind = kind.rawValue
        self.flags = flags
        self.payload = payload
    }
}

/// Cuts a byte stream into frames; a header that announces more than ``TTRPCFrame/maxPayload``
/// closes the connection, since its payload cannot be skipped safely.
struct TTRPCFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = TTRPCFrame

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard buffer.readableBytes >= TTRPCFrame.headerSize,
              let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self)
        else { return .needMoreData }
        guard length <= TTRPCFrame.maxPayload else { throw TTRPCError.frameTooLarge(Int(length)) }
        guard buffer.readableBytes >= TTRPCFrame.headerSize + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        guard let stream = buffer.readInteger(as: UInt32.self), let kind = buffer.readInteger(as: UInt8.self),
              let flags = buffer.readInteger(as: UInt8.self), let payload = buffer.readBytes(length: Int(length))
        else { return .needMoreData }
        var frame = TTRPCFrame(streamID: stream, kind: .request, flags: flags, payload: payload)
        frame.kind = kind
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }
}

struct TTRPCFrameEncoder: MessageToByteEncoder {
    typealias OutboundIn = TTRPCFrame

    func encode(data frame: TTRPCFrame, out: inout ByteBuffer) throws {
        guard frame.payload.count <= TTRPCFrame.maxPayload else { throw TTRPCError.frameTooLarge(frame.payload.count) }
        out.writeInteger(UInt32(frame.payload.count))
        out.writeInteger(frame.streamID)
        out.writeInteger(frame.kind)
        out.writeInteger(frame.flags)
        out.writeBytes(frame.payload)
    }
}
