// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "./Ownable.sol";

/// @notice Receives slashed stakes. The owner may pay them out.
contract Treasury is Ownable {
    event Received(address indexed from, uint256 amount);
    event Withdrawn(address indexed to, uint256 amount);

    error TransferFailed();

    receive() external payable {
        emit Received(msg.sender, msg.value);
    }

    function withdraw(address payable to, uint256 amount) external onlyOwner {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
        emit Withdrawn(to, amount);
    }
}
