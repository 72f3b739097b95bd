// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @notice Test only: a node operator or task creator that is a contract. Its operator (an EOA) drives it with
/// `exec`; when it receives ETH it accepts it, refuses it, or calls back into a contract (a re-entrancy attempt)
/// once or on every payment, and logs how that call ended.
contract Actor {
    uint8 public constant ACCEPT = 0;
    uint8 public constant REENTER_ONCE = 1;
    uint8 public constant REENTER_ALWAYS = 2;
    uint8 public constant REFUSE = 3;

    address public immutable operator;
    // target, mode and value share one slot: a payment pushed with a 50,000 gas stipend must leave the
    // re-entrant call enough gas to reach the guard it is meant to test.
    address private target;
    uint8 public mode;
    uint88 private reentryValue;
    bytes private reentryData;

    event Reentered(bool ok, bytes4 errorSelector);

    error NotOperator();
    error Refused();

    constructor() payable {
        operator = msg.sender;
    }

    /// Calls `to` as this contract, forwarding `value` from its balance (plus what the operator sends along);
    /// a revert bubbles up with its data, so the caller sees the callee's custom error.
    function exec(address to, uint256 value, bytes calldata data) external payable returns (bytes memory ret) {
        if (msg.sender != operator) revert NotOperator();
        bool ok;
        (ok, ret) = to.call{value: value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
    }

    function arm(uint8 mode_, address target_, uint256 value_, bytes calldata data_) external {
        if (msg.sender != operator) revert NotOperator();
        mode = mode_;
        target = target_;
        reentryValue = uint88(value_);
        reentryData = data_;
    }

    receive() external payable {
        uint8 m = mode;
        if (m == ACCEPT) return;
        if (m == REFUSE) revert Refused();
        if (m == REENTER_ONCE) mode = ACCEPT;
        (bool ok, bytes memory ret) = target.call{value: reentryValue}(reentryData);
        emit Reentered(ok, ret.length >= 4 ? bytes4(ret) : bytes4(0));
    }
}
